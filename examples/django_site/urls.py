from django.urls import path

from . import views

urlpatterns = [
    path("api/body", views.body),
    path("api/upload", views.upload),
]

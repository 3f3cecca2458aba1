from django.urls import path

from examples.django_site import views

urlpatterns = [
    path("api/body", views.body),
    path("api/upload", views.upload),
]

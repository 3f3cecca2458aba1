"""A minimal Django project, mirrored by wsgimirror: no database, no apps, two views."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
# Django sets the process's TZ from TIME_ZONE, whose default is America/Chicago: every log line would move.
TIME_ZONE = "UTC"
# Bodies of any size: request.body is read whole, uploads past 2.5 MiB go to temporary files.
DATA_UPLOAD_MAX_MEMORY_SIZE = None

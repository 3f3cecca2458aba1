"""The Django handler, bare and wrapped in MirrorMiddleware.

With the command (it wraps the app itself):
    wsgimirror serve examples.django_site.wsgi:django_app --config examples/mirror.json
With gunicorn's gevent worker (the config from WSGIMIRROR_CONFIG, else examples/mirror.json):
    gunicorn -k gevent -b 127.0.0.1:8000 examples.django_site.wsgi:application
"""

import os
from pathlib import Path

from django.core.wsgi import get_wsgi_application

from wsgimirror.middleware import MirrorMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")

django_app = get_wsgi_application()
application = MirrorMiddleware(
    django_app, os.environ.get("WSGIMIRROR_CONFIG", str(Path(__file__).resolve().parents[1] / "mirror.json"))
)

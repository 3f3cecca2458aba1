"""Two ways Django reads a body: request.body (the raw bytes) and request.POST / request.FILES (multipart)."""

import hashlib

from django.http import JsonResponse


def body(request):
    """Reads the raw body through ``request.body``."""
    data = request.body
    return JsonResponse({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def upload(request):
    """Reads a multipart form with a file through ``request.POST`` and ``request.FILES``."""
    upload = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    return JsonResponse(
        {"fields": request.POST.dict(), "file": upload.name, "bytes": upload.size, "sha256": digest.hexdigest()}
    )

import os
import platform

from django.shortcuts import render


def home(request):
    return render(request, "home.html", {"python": platform.python_version(), "pid": os.getpid()})

"""The app every side builds and serves: a real `django-admin startproject`
plus one view rendering a template, and a CSS file for collectstatic. The
admin's URLs stay routed (as startproject makes them): its login page is a
real page of a real app (the front section loads it; a GET needs no database)."""

from __future__ import annotations

import os
import shutil

from .proc import run

VIEW = """from django.shortcuts import render

ITEMS = [{"name": f"item {n}", "price": n * 1.25} for n in range(30)]


def home(request):
    return render(request, "bench/home.html", {"items": ITEMS, "title": "warptasks bench"})
"""

TEMPLATE = """{% load static %}<!doctype html>
<html><head><title>{{ title }}</title><link rel="stylesheet" href="{% static 'bench/site.css' %}"></head>
<body><h1>{{ title|upper }}</h1>
<table>{% for item in items %}<tr class="{% cycle 'odd' 'even' %}"><td>{{ forloop.counter }}</td><td>{{ item.name|title }}</td>
<td>{{ item.price|floatformat:2 }}</td></tr>{% endfor %}</table>
</body></html>
"""

CSS = "body { font-family: sans-serif; margin: 2em; }\n" + "".join(
    f".c{n} {{ color: #{n:06x}; padding: {n % 7}px; }}\n" for n in range(120)
)

SETTINGS_TAIL = """
# Benchmark app: served in production mode, static files collected here.
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS += ["bench"]
# A str, not a Path: warpdrive 0.34 (2020) calls str methods on it at start.
STATIC_ROOT = str(BASE_DIR / "staticfiles")
"""

URLS = """from django.contrib import admin
from django.urls import path

from bench.views import home

urlpatterns = [path("", home), path("admin/", admin.site.urls)]
"""

PROJECT = "mysite"


def make_project(django_admin: str, django_version: str, dest: str) -> str:
    """A fresh project at ``dest`` (world-readable); returns its requirements line."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    run([django_admin, "startproject", PROJECT, dest])
    app = os.path.join(dest, "bench")
    for sub in ("templates/bench", "static/bench"):
        os.makedirs(os.path.join(app, sub))
    files = {
        "bench/__init__.py": "",
        "bench/views.py": VIEW,
        "bench/templates/bench/home.html": TEMPLATE,
        "bench/static/bench/site.css": CSS,
        f"{PROJECT}/urls.py": URLS,
        "requirements.txt": f"Django=={django_version}\n",
    }
    for name, text in files.items():
        with open(os.path.join(dest, name), "w") as handle:
            handle.write(text)
    with open(os.path.join(dest, PROJECT, "settings.py"), "a") as handle:
        handle.write(SETTINGS_TAIL)
    for folder, _dirs, names in os.walk(dest):
        os.chmod(folder, 0o755)
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644 if name != "manage.py" else 0o755)
    return files["requirements.txt"]


def copy_project(source: str, dest: str) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest, symlinks=True)


def touch_view(project: str, n: int) -> None:
    """A one-line code change."""
    path = os.path.join(project, "bench", "views.py")
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if not line.startswith("CHANGE = ")]
    lines.append(f"CHANGE = {n}")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")

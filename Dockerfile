# Production image: gunicorn web node, Dramatiq worker and scheduler share it.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput
USER nobody
EXPOSE 8000
# Workers, threads, timeouts, the access log and the metrics directory: gunicorn.conf.py.
# Health checks per role (web: /healthz, worker: manage.py worker_health): docker-compose.yml.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "backend.wsgi:application"]

"""The Celery glue: the one floor of ``workers/`` that imports the backend.

``app.py`` builds the Celery application from the backend's settings (``celery -A workers.glue.app worker``),
``broker.py`` is the embedded broker's atomic filesystem transport, ``tasks.py`` claims a job and runs it
through the life cycle (backend/lifecycle.py), and ``runners.py`` says what each job kind computes with the
science of ``workers/landscape/``, which imports nothing of this floor or of the backend (a test checks).
"""

# One image for the API and the workers (docker-compose.yml). CUDA comes with the torch wheel.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY backend ./backend
COPY workers ./workers
COPY frontend ./frontend
RUN pip install --no-cache-dir -c requirements/constraints.txt -e .
ENV TOROID_HOME=/data
EXPOSE 8000
CMD ["toroid", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]

# One image for the API and the workers. The default installs the CPU build of torch;
# for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY solvers ./solvers
COPY worker ./worker
COPY service ./service
COPY examples ./examples
RUN pip install . && useradd --create-home eulerbench
USER eulerbench

EXPOSE 8000
CMD ["eulerbench", "api", "--host", "0.0.0.0", "--port", "8000"]

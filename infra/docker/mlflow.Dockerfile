# MLflow tracking server image for infra/k8s/mlflow.yaml: mlflow (same version as the clients), the PostgreSQL
# driver for the backend store and boto3 for S3 artifacts.
#   docker build -f infra/docker/mlflow.Dockerfile -t REGISTRY/zhgpt-mlflow:3.17.2 infra/docker
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" psycopg2-binary boto3 \
 && useradd --create-home --uid 1000 mlflow
USER mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow"]

# rendered by envship (envship/2)
FROM python:3.11-slim
ENV GREETING="literal \$HOME stays literal" \
    MLFLOW_TRACKING_URI="azureml://eastus.api.azureml.ms/mlflow/v1.0" \
    OMP_NUM_THREADS="4"
LABEL "io.envship.hash"="sha256:fad3918788dafafe3b6e7c1144de96971782ca18668fecb09e8e0f0e5bd35cfa" \
    "io.envship.inputs"="{\"base\":{\"image\":\"python:3.11-slim\"},\"context\":[],\"environment\":{\"GREETING\":\"literal \$HOME stays literal\",\"MLFLOW_TRACKING_URI\":\"azureml://eastus.api.azureml.ms/mlflow/v1.0\",\"OMP_NUM_THREADS\":\"4\"},\"platform\":\"linux/amd64\",\"python\":{\"interpreter\":\"python3\",\"mode\":\"user\"},\"scheme\":\"envship/2\"}" \
    "io.envship.python.interpreter"="python3" \
    "io.envship.scheme"="envship/2" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"

# rendered by envship (envship/1)
FROM python:3.11-slim
ENV GREETING="literal \$HOME stays literal" \
    MLFLOW_TRACKING_URI="azureml://eastus.api.azureml.ms/mlflow/v1.0" \
    OMP_NUM_THREADS="4"
LABEL "io.envship.hash"="sha256:9e2fbd6e199e21fe50a08e6841894b46abf93696b751f9faef1853a216817a02" \
    "io.envship.inputs"="{\"base\":{\"image\":\"python:3.11-slim\"},\"context\":[],\"environment\":{\"GREETING\":\"literal \$HOME stays literal\",\"MLFLOW_TRACKING_URI\":\"azureml://eastus.api.azureml.ms/mlflow/v1.0\",\"OMP_NUM_THREADS\":\"4\"},\"platform\":\"linux/amd64\",\"python\":{\"interpreter\":\"python3\",\"mode\":\"user\"},\"scheme\":\"envship/1\"}" \
    "io.envship.python.interpreter"="python3" \
    "io.envship.scheme"="envship/1" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"

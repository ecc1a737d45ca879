# rendered by envship (envship/2)
FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1
COPY azureml-environment-setup/mutated_conda_dependencies.yml /azureml-environment-setup/mutated_conda_dependencies.yml
RUN --mount=type=cache,id=envship-conda-pkgs,target=/var/cache/envship/conda-pkgs,sharing=locked \
    --mount=type=cache,id=envship-pip,target=/var/cache/envship/pip \
    --mount=type=secret,id=envship-pip-conf,target=/run/secrets/envship-pip-conf \
    export CONDA_PKGS_DIRS=/var/cache/envship/conda-pkgs PIP_CACHE_DIR=/var/cache/envship/pip \
 && if [ -f /run/secrets/envship-pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/envship-pip-conf; fi \
 && conda env create -p /azureml-envs/azureml_8786dc561955761ab00674708a5c3235 -f /azureml-environment-setup/mutated_conda_dependencies.yml \
 && CONDA_ROOT_DIR="$(conda info --root)" \
 && rm -rf "$CONDA_ROOT_DIR/pkgs" \
 && find "$CONDA_ROOT_DIR" -type d -name __pycache__ -exec rm -rf {} +
ENV PATH=/azureml-envs/azureml_8786dc561955761ab00674708a5c3235/bin:$PATH
ENV AZUREML_CONDA_ENVIRONMENT_PATH=/azureml-envs/azureml_8786dc561955761ab00674708a5c3235
ENV LD_LIBRARY_PATH=/azureml-envs/azureml_8786dc561955761ab00674708a5c3235/lib:$LD_LIBRARY_PATH
ENV AZUREML_ENVIRONMENT_IMAGE=True
ENV EXAMPLE_ENV_VAR="EXAMPLE_VALUE"
LABEL "io.envship.hash"="sha256:38e6acdca3b754bde4db52ddcdb0ef3909e4fdb6fecfb20bffbe39e0978b0d57" \
    "io.envship.inputs"="{\"base\":{\"image\":\"mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1\"},\"context\":[],\"environment\":{\"EXAMPLE_ENV_VAR\":\"EXAMPLE_VALUE\"},\"platform\":\"linux/amd64\",\"python\":{\"conda\":{\"channels\":[\"pytorch\",\"anaconda\",\"conda-forge\"],\"dependencies\":[\"python=3.8.13\",\"pytorch\",\"torchvision\"],\"pip\":[\"deepspeed\",\"mpi4py\",\"pyyaml\"],\"variables\":{}},\"mode\":\"conda\"},\"scheme\":\"envship/2\"}" \
    "io.envship.scheme"="envship/2" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
CMD ["bash"]

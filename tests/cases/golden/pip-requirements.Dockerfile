# rendered by envship (envship/1)
FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1
COPY azureml-environment-setup/mutated_conda_dependencies.yml /azureml-environment-setup/mutated_conda_dependencies.yml
RUN conda env create -p /azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868 -f /azureml-environment-setup/mutated_conda_dependencies.yml \
 && rm -rf "$HOME/.cache/pip" \
 && conda clean -aqy \
 && CONDA_ROOT_DIR="$(conda info --root)" \
 && rm -rf "$CONDA_ROOT_DIR/pkgs" \
 && find "$CONDA_ROOT_DIR" -type d -name __pycache__ -exec rm -rf {} +
ENV PATH=/azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868/bin:$PATH
ENV AZUREML_CONDA_ENVIRONMENT_PATH=/azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868
ENV LD_LIBRARY_PATH=/azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868/lib:$LD_LIBRARY_PATH
ENV AZUREML_ENVIRONMENT_IMAGE=True
LABEL "io.envship.hash"="sha256:5cd59cb7ee4f429034087f94a6bb15b26e227b026c5ec92437cbe46180f151a0" \
    "io.envship.inputs"="{\"base\":{\"image\":\"mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1\"},\"context\":[],\"environment\":{},\"platform\":\"linux/amd64\",\"python\":{\"conda\":{\"channels\":[\"anaconda\",\"conda-forge\"],\"dependencies\":[\"pip\",\"python=3.8.13\"],\"pip\":[\"mlflow-skinny==2.17.2\",\"pandas<2.3,>=2.2\",\"scikit-learn==1.5.2\"],\"variables\":{}},\"mode\":\"conda\"},\"scheme\":\"envship/1\"}" \
    "io.envship.scheme"="envship/1" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
CMD ["bash"]

"""The bundled experiment configs (quick, paper_convnet, paper_resnet18): see jaxrobust.config."""

"""The bundled experiment configs (quick, medium, paper_convnet, paper_resnet18): see jaxrobust.config."""

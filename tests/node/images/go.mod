// Small images the test node needs besides the project's own: the pod sandbox ("pause")
// and a model store that serves model files over HTTP inside the cluster. Standard
// library only, built static.
module modelship.io/node/images

go 1.26.0

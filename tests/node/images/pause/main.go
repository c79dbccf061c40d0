// Command pause holds a pod's namespaces open: it waits for SIGTERM or SIGINT and exits 0.
// containerd runs it as every pod's sandbox container, so the node needs no image from a
// registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

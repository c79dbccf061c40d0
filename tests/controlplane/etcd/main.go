// Command etcd runs the etcd server from the go.etcd.io/etcd/server/v3 module,
// at the version k8s.io/kubernetes itself is tested against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

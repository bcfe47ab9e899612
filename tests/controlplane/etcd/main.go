// etcd as a program: Debian's etcd-server (3.4) is older than Kubernetes 1.35 accepts.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

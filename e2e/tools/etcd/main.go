// Command etcd is etcd's own server entry point, built from its Go module at the version
// pinned in go.mod, so the e2e control plane does not depend on a distribution's etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

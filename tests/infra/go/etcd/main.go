// Command etcd is a thin wrapper around etcdmain so etcd can be built from published modules.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

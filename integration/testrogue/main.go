// Command testrogue stands for a broken new build in the upgrade tests: as
// a worker it tells tableflip it is ready, then never links to the holder
// and never serves.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testrogue:", err)
		os.Exit(1)
	}
	upg.Ready()
	time.Sleep(time.Hour)
}

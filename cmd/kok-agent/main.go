// Command kok-agent is kok's node agent: it runs on every host a Machine
// describes and keeps the host's components at their final state.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "kok-agent: not implemented yet")
	os.Exit(2)
}

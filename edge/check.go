package edge

import "github.com/meridian-gw/meridian/edge/config"

// Check compiles doc as Apply would, without starting or serving anything,
// so that `meridian validate` refuses exactly what a node would refuse.
func Check(doc *config.Document) error {
	g := New(Options{})
	_, err := g.Compile(doc, CompileInput{Version: 1})
	return err
}

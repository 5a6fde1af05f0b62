package config

import (
	"flag"
	"strings"
)

// FlagName returns the flag that sets key: its path with '-' for '_', as --server.addr,
// --limits.max-request-size.
func FlagName(key string) string {
	return strings.ReplaceAll(key, "_", "-")
}

// BindFlags defines on fs one string flag for every key outside models (--server.addr,
// --log.level, …), its usage from the key's description, and returns the function that,
// after fs.Parse, gives the values of the flags set explicitly, keyed by key, for
// LoadOptions.Flags. A flag left out keeps the value of the lower layers.
func BindFlags(fs *flag.FlagSet) func() map[string]any {
	names := map[string]string{}
	rootNode().leaves(func(n *node) {
		if strings.Contains(n.path, "[]") {
			return
		}
		name := FlagName(n.path)
		names[name] = n.path
		usage := n.desc
		if len(n.enum) > 0 {
			usage += " One of " + strings.Join(n.enum, ", ") + "."
		}
		fs.String(name, "", usage+" (config key "+n.path+", env "+n.env+")")
	})
	return func() map[string]any {
		out := map[string]any{}
		fs.Visit(func(f *flag.Flag) {
			if key, ok := names[f.Name]; ok {
				out[key] = f.Value.String()
			}
		})
		return out
	}
}

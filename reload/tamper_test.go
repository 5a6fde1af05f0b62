package reload

import (
	"testing"

	"github.com/policyd/policyd/config"
)

// TestDesiredOnTamper: artifacts.on_tamper reaches the engines' desired state: keep keeps a
// loaded version whose files fail verification, retire (the default) refuses it.
func TestDesiredOnTamper(t *testing.T) {
	c := config.Defaults()
	c.Repository.Path = "repo"
	if Desired(c, nil, nil).KeepTampered {
		t.Error("artifacts.on_tamper defaults to retire: tampered versions must not be kept")
	}
	c.Artifacts.OnTamper = "keep"
	if !Desired(c, nil, nil).KeepTampered {
		t.Error("artifacts.on_tamper: keep did not reach the engines")
	}
}

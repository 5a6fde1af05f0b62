package policyd_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	policyd "github.com/policyd/policyd/clients/go"
)

// These examples compile with the package's tests; they need a server, so they do not run.

func ExampleClient_Infer() {
	c, err := policyd.New("http://127.0.0.1:8000")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	obs := []float32{0.1, -0.2, 0.05, 0.3, 0.0, 1.0, -0.5, 0.2}
	res, err := c.Infer(context.Background(), "3DBall",
		[]policyd.Tensor{policyd.NewTensor("obs_0", []int64{1, 8}, obs)},
		policyd.WithOutputs("deterministic_continuous_actions"))
	var overloaded *policyd.UnavailableError
	switch {
	case errors.As(err, &overloaded) && overloaded.Overloaded:
		log.Printf("server overloaded after retries; it suggests waiting %s", overloaded.RetryAfter)
		return
	case err != nil:
		log.Fatal(err)
	}
	act, _ := res.Output("deterministic_continuous_actions")
	v, _ := act.Float32s()
	fmt.Println(act.Shape, v)
}

func ExamplePolicy_Episode() {
	c, err := policyd.New("grpc://127.0.0.1:8001")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// A recurrent policy served with models[].sequence.states: the server carries its state.
	p := policyd.NewPolicy(c, "hallway")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ep, err := p.Episode(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer ep.Close()
	for step := 0; step < 3; step++ {
		act, err := ep.ActAll(ctx, []policyd.Tensor{
			policyd.NewTensor("obs_0", []int64{105}, make([]float32, 105)),
			policyd.NewTensor("obs_1", []int64{3}, []float32{0, 1, 0}),
			policyd.NewTensor("action_masks", []int64{5}, []float32{1, 1, 1, 1, 1}),
		}, policyd.WithSeed(uint64(step)))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(act["discrete_actions"].Shape)
	}
}

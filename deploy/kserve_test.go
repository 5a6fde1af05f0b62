package deploy

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const kserveDir = "kserve"

// KServe's types are not in k8s.io/api, and its Go module would bring Knative and more. These
// structs mirror the fields of its CRDs (serving.kserve.io) that deploy/kserve uses, with
// KServe's JSON names and k8s.io/api types where KServe embeds them; strict decoding makes any
// other field an error, so a typo fails here instead of being dropped by the API server.

// clusterServingRuntime is serving.kserve.io/v1alpha1 ClusterServingRuntime.
type clusterServingRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SupportedModelFormats []struct {
			Name       string  `json:"name"`
			Version    *string `json:"version,omitempty"`
			AutoSelect *bool   `json:"autoSelect,omitempty"`
			Priority   *int32  `json:"priority,omitempty"`
		} `json:"supportedModelFormats"`
		MultiModel       *bool    `json:"multiModel,omitempty"`
		Disabled         *bool    `json:"disabled,omitempty"`
		ProtocolVersions []string `json:"protocolVersions,omitempty"`
		// ServingRuntimePodSpec, inlined in KServe's type
		Containers   []corev1.Container  `json:"containers"`
		Volumes      []corev1.Volume     `json:"volumes,omitempty"`
		NodeSelector map[string]string   `json:"nodeSelector,omitempty"`
		Tolerations  []corev1.Toleration `json:"tolerations,omitempty"`
		Labels       map[string]string   `json:"labels,omitempty"`
		Annotations  map[string]string   `json:"annotations,omitempty"`
	} `json:"spec"`
}

// inferenceService is serving.kserve.io/v1beta1 InferenceService, predictor.model only.
type inferenceService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Predictor struct {
			MinReplicas *int32 `json:"minReplicas,omitempty"`
			MaxReplicas int32  `json:"maxReplicas,omitempty"`
			Model       *struct {
				ModelFormat struct {
					Name    string  `json:"name"`
					Version *string `json:"version,omitempty"`
				} `json:"modelFormat"`
				Runtime         *string `json:"runtime,omitempty"`
				ProtocolVersion *string `json:"protocolVersion,omitempty"`
				StorageURI      *string `json:"storageUri,omitempty"`
				// KServe's ModelSpec inlines a corev1.Container (resources, env, ...)
				corev1.Container
			} `json:"model,omitempty"`
		} `json:"predictor"`
	} `json:"spec"`
}

// kserveMountPath is where KServe's storage initializer puts (or mounts) the storageUri.
const kserveMountPath = "/mnt/models"

func TestKServe(t *testing.T) {
	var runtimes []clusterServingRuntime
	var services []inferenceService
	for _, y := range render(t, kserveDir) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(y, &tm); err != nil {
			t.Fatalf("%s: %v", kserveDir, err)
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "serving.kserve.io/v1alpha1 ClusterServingRuntime":
			var r clusterServingRuntime
			strictJSON(t, kserveDir+" ClusterServingRuntime", y, &r)
			runtimes = append(runtimes, r)
		case "serving.kserve.io/v1beta1 InferenceService":
			var s inferenceService
			strictJSON(t, kserveDir+" InferenceService", y, &s)
			services = append(services, s)
		default:
			t.Errorf("%s: unexpected object %s %s", kserveDir, tm.APIVersion, tm.Kind)
		}
	}
	rt := one(t, kserveDir, "ClusterServingRuntime", runtimes)

	formats := map[string]bool{}
	for _, f := range rt.Spec.SupportedModelFormats {
		formats[f.Name] = true
	}
	if !formats["onnx"] {
		t.Errorf("supportedModelFormats %+v: want onnx", rt.Spec.SupportedModelFormats)
	}
	if !slices.Equal(rt.Spec.ProtocolVersions, []string{"v2", "grpc-v2"}) {
		t.Errorf("protocolVersions %v: policyd speaks v2 (Open Inference Protocol) over HTTP and gRPC: want [v2 grpc-v2]", rt.Spec.ProtocolVersions)
	}
	if rt.Spec.MultiModel != nil && *rt.Spec.MultiModel {
		t.Error("multiModel: policyd is not a ModelMesh runtime")
	}
	if len(rt.Spec.Containers) != 1 || rt.Spec.Containers[0].Name != "kserve-container" {
		t.Fatalf("containers: want one, named kserve-container (KServe merges the predictor into it by that name)")
	}
	c := rt.Spec.Containers[0]
	if len(c.Ports) != 1 {
		t.Fatalf("container ports %+v: want one (Knative allows one)", c.Ports)
	}
	port := c.Ports[0].ContainerPort
	if len(c.Command) != 1 || c.Command[0] != "/opt/policyd/bin/policyd" {
		t.Errorf("command %q, want [/opt/policyd/bin/policyd]", c.Command)
	}
	env := envOf(t, c)
	files := map[string]string{}
	if tok := adminTokenFile(t, c.Args, env, files); tok != "" {
		// the runtime's volumes, merged by KServe into the predictor pod; Knative also
		// requires a Secret's mount to be read-only
		checkSecretMount(t, tok, c, rt.Spec.Volumes)
		files[tok] = "test-token\n"
	}
	cfg := checkPolicydConfig(t, c.Args, env, files, kserveMountPath)
	if host, p, _ := net.SplitHostPort(cfg.Server.Addr); p != strconv.Itoa(int(port)) || host == "127.0.0.1" {
		t.Errorf("policyd listens on %s, the container port is %d", cfg.Server.Addr, port)
	}
	checkProbe(t, "readiness", c, c.ReadinessProbe, "/v2/health/ready", port)
	if rt.Spec.Annotations["prometheus.kserve.io/port"] != strconv.Itoa(int(port)) || rt.Spec.Annotations["prometheus.kserve.io/path"] != "/metrics" {
		t.Errorf("annotations %v: want prometheus.kserve.io/port %d and path /metrics", rt.Spec.Annotations, port)
	}
	if sc := c.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != imageUID ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v: want non-root user %d and a read-only root", sc, imageUID)
	}

	// gRPC: policyd serves it beside HTTP on every interface; the runtime's one port (Knative
	// allows one) is HTTP's, and an InferenceService of protocol grpc-v2 names the gRPC port h2c
	// (KServe's and Knative's name for plain-text HTTP/2), which replaces it
	_, gp, err := net.SplitHostPort(cfg.Server.GRPCAddr)
	if err != nil {
		gp = "0"
	}
	grpcPort, _ := strconv.Atoi(gp)
	if grpcPort == int(port) {
		t.Errorf("policyd serves gRPC on %s, HTTP's port", cfg.Server.GRPCAddr)
	}
	checkGRPCListen(t, kserveDir+" ClusterServingRuntime", cfg, int32(grpcPort))
	if c.Ports[0].Name == "h2c" {
		t.Errorf("the runtime's port %d is named h2c: KServe would send HTTP/2 to policyd's HTTP/1.1 listener", port)
	}

	protocols := map[string]int{}
	for _, isvc := range services {
		m := isvc.Spec.Predictor.Model
		if m != nil && m.ProtocolVersion != nil {
			protocols[*m.ProtocolVersion]++
			want := []corev1.ContainerPort(nil) // the runtime's: HTTP
			if *m.ProtocolVersion == "grpc-v2" {
				want = []corev1.ContainerPort{{Name: "h2c", ContainerPort: int32(grpcPort), Protocol: corev1.ProtocolTCP}}
			}
			if !slices.Equal(m.Ports, want) {
				t.Errorf("InferenceService %s (protocol %s): ports %+v, want %+v", isvc.Name, *m.ProtocolVersion, m.Ports, want)
			}
		}
		checkInferenceService(t, rt, formats, isvc)
	}
	if protocols["v2"] != 1 || protocols["grpc-v2"] != 1 {
		t.Errorf("the example InferenceServices' protocols %v: want one v2 (HTTP) and one grpc-v2", protocols)
	}
}

// checkInferenceService: an example InferenceService uses this runtime.
func checkInferenceService(t *testing.T, rt clusterServingRuntime, formats map[string]bool, isvc inferenceService) {
	t.Helper()
	if errs := validation.IsDNS1035Label(isvc.Name); len(errs) > 0 {
		t.Errorf("InferenceService name %q: %v (KServe requires a DNS-1035 label)", isvc.Name, errs)
	}
	m := isvc.Spec.Predictor.Model
	if m == nil {
		t.Fatal("InferenceService: no predictor.model")
	}
	if m.Runtime == nil || *m.Runtime != rt.Name {
		t.Errorf("predictor.model.runtime %v, want %s", m.Runtime, rt.Name)
	}
	if !formats[m.ModelFormat.Name] {
		t.Errorf("modelFormat %s is not one the runtime supports", m.ModelFormat.Name)
	}
	if m.ProtocolVersion == nil || !slices.Contains(rt.Spec.ProtocolVersions, *m.ProtocolVersion) {
		pv := "(none)"
		if m.ProtocolVersion != nil {
			pv = *m.ProtocolVersion
		}
		t.Errorf("InferenceService %s: protocolVersion %s is not one the runtime speaks %v", isvc.Name, pv, rt.Spec.ProtocolVersions)
	}
	if m.StorageURI == nil {
		t.Fatal("no storageUri")
	}
	u, err := url.Parse(*m.StorageURI)
	if err != nil || !slices.Contains([]string{"pvc", "s3", "gs", "https", "hdfs", "oci"}, u.Scheme) || u.Host == "" {
		t.Errorf("storageUri %q: want a scheme KServe's storage initializer supports and a host (%v)", *m.StorageURI, err)
	}
}

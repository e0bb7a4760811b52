// A Dkron executor plugin for dkron-rs's tests, built with HashiCorp's go-plugin: the same
// handshake, gRPC services and broker a real `dkron-executor-*` binary uses.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

type executorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (p *executorPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	RegisterExecutorServiceServer(s, &server{broker: broker})
	return nil
}

func (p *executorPlugin) GRPCClient(ctx context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return nil, fmt.Errorf("a plugin, not a host")
}

type server struct {
	broker *plugin.GRPCBroker
}

// Execute streams two status lines through the host's status server (reached through the
// broker, as Dkron's plugins do), then answers according to the job's config:
// "mode": "echo" (default) writes the job name and "message"; "fail" returns an error;
// "sleep" waits "seconds"; "crash" exits the process.
func (s *server) Execute(ctx context.Context, req *ExecuteRequest) (*ExecuteResponse, error) {
	conn, err := s.broker.Dial(req.StatusServer)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	status := NewStatusHelperServiceClient(conn)
	for _, line := range []string{"starting\n", "working\n"} {
		if _, err := status.Update(ctx, &StatusUpdateRequest{Output: []byte(line)}); err != nil {
			return nil, fmt.Errorf("status update: %v", err)
		}
	}
	switch req.Config["mode"] {
	case "fail":
		return &ExecuteResponse{Output: []byte("partial output\n"), Error: "the plugin failed on purpose"}, nil
	case "sleep":
		d, _ := time.ParseDuration(req.Config["seconds"] + "s")
		time.Sleep(d)
	case "crash":
		os.Exit(3)
	}
	keys := make([]string, 0, len(req.Config))
	for k := range req.Config {
		keys = append(keys, k)
	}
	out := fmt.Sprintf("job=%s message=%s pid=%d keys=%d\n", req.JobName, req.Config["message"], os.Getpid(), len(keys))
	return &ExecuteResponse{Output: []byte(strings.TrimSpace(out) + "\n")}, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "DKRON_PLUGIN_MAGIC_COOKIE",
			MagicCookieValue: "b29a76488b6f3ca7955c5f769b50641f0fcd88748d8cedecda313d516320ca19",
		},
		Plugins:    map[string]plugin.Plugin{"executor": &executorPlugin{}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}

"""facegate's service layer: the CLI now; the gRPC server and its pipeline (issue "The service")."""

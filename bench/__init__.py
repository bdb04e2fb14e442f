"""The benchmark suite of issue 6: our server against PeerJS and Socket.IO (bench/README.md)."""

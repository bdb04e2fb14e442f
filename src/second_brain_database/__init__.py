"""Second Brain Database: a WebRTC signaling service."""

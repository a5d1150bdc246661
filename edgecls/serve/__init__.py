"""edgecls.serve: a bundle as an HTTP service, the live camera view and MQTT events (front-end over the runtime)."""

"""Registration in ESPnet's tasks."""

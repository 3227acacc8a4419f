"""All-in-one ESPnet encoders."""

"""ESPnet3 (ESPnet 202609+) pieces of the all-in-one recipes in ``egs3/``. Imported only by them and by
ESPnet3 processes; nothing else in the plugin imports this package."""

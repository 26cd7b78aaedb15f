"""The core layer: what every layer above shares. Imports only ``ttc.backends``."""

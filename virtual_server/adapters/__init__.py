"""Bridges from devices that do not speak Modbus to the virtual server's registers."""

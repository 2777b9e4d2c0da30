"""Modbus access: request planning, decoding and (in client.py) the pymodbus client."""

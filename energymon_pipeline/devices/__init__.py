"""Devices that describe themselves: SunSpec layouts, and the shipped profiles' signatures."""

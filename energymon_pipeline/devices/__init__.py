"""Devices that describe themselves: SunSpec layouts, the shipped profiles' signatures, and
the identification of what answers on a link (`energymon discover`, meters of type `auto`)."""

"""What a poll reads from a SunSpec layout: the numeric points of the polled models, from the
Alliance's definitions, with the device's addresses, scale-factor addresses, each type's
not-implemented value, counters marked cumulative, and names that stay unique."""

from __future__ import annotations

from energymon_pipeline.devices.sunspec import (
    POLLED_MODELS,
    SunSpecDevice,
    SunSpecModel,
    layout_registers,
)
from energymon_pipeline.devices.sunspec_models import model_definition
from energymon_pipeline.modbus.plan import plan_requests
from energymon_pipeline.modbus.types import DataType


def chain(*models: tuple[int, int], base: int = 40000) -> SunSpecDevice:
    """A device with `models` (id, length) one after the other from `base` + 2."""
    address = base + 2
    laid = []
    for model_id, length in models:
        laid.append(SunSpecModel(model_id, address, length))
        address += 2 + length
    return SunSpecDevice(1, base, tuple(laid))


def by_name(device: SunSpecDevice) -> dict:
    return {r.measurement: r for r in layout_registers(device).registers}


def test_every_required_model_has_a_definition_and_numeric_points():
    required = {1, 101, 102, 103, 111, 112, 113, 124, 160, 201, 202, 203, 204, 211, 212, 213,
                214}  # fmt: skip
    assert required <= POLLED_MODELS
    for model_id in sorted(required):
        definition = model_definition(model_id)
        assert definition is not None, model_id
        length = definition.fixed.length - 2 + (20 if model_id == 160 else 0)
        names = by_name(chain((model_id, length)))
        assert names, model_id
        assert all(name.startswith(definition.name + "_") for name in names)


def test_two_models_of_one_kind_get_numbered_names_and_their_own_addresses():
    device = chain((1, 66), (203, 105), (203, 105), (213, 124))
    names = by_name(device)
    first, second = names["ac_meter_abcn_W"], names["ac_meter_abcn_2_W"]
    assert second.address - first.address == 107
    assert first.scale_factor_address == first.address + 4  # W, WphA-C, W_SF
    assert second.scale_factor_address == second.address + 4
    assert names["ac_meter_abcn_float_W"].data_type is DataType.FLOAT32
    assert names["ac_meter_abcn_float_W"].scale_factor_address is None
    assert names["ac_meter_abcn_float_TotWhImp"].cumulative  # energy in a float model
    assert len(names) == len(layout_registers(device).registers)  # no name twice


def test_point_types_map_to_data_types_and_not_implemented_values():
    names = by_name(chain((103, 50), (124, 24)))
    expected = {
        "inverter_three_phase_W": (DataType.INT16, 0x8000, False),
        "inverter_three_phase_A": (DataType.UINT16, 0xFFFF, False),
        "inverter_three_phase_WH": (DataType.UINT32, 0, True),
        "inverter_three_phase_St": (DataType.UINT16, 0xFFFF, False),
        "inverter_three_phase_Evt1": (DataType.UINT32, 0xFFFFFFFF, False),
        "storage_basic_StorCtl_Mod": (DataType.UINT16, 0xFFFF, False),
        "storage_basic_ChaState": (DataType.UINT16, 0xFFFF, False),
    }
    for name, (data_type, sentinel, cumulative) in expected.items():
        spec = names[name]
        assert (spec.data_type, spec.not_implemented, spec.cumulative) == (
            data_type,
            sentinel,
            cumulative,
        ), name
        assert spec.function_code == 3
    assert "inverter_three_phase_W_SF" not in names  # scale factors are not values
    charge = names["storage_basic_ChaState"]
    assert charge.unit == "% AhrRtg"  # SunSpec's own unit: percent of the rated capacity
    assert charge.scale_factor_address == 40002 + 52 + 22


def test_a_model_shorter_than_its_definition_reads_only_what_the_device_has():
    names = by_name(chain((103, 38)))  # an older 103 without the event registers
    assert "inverter_three_phase_St" in names
    assert "inverter_three_phase_Evt1" not in names
    assert all(r.end <= 40002 + 40 for r in names.values())


def test_mppt_modules_far_from_their_scale_factors_are_left_out_and_said_so():
    device = chain((160, 8 + 8 * 20))  # eight modules: the last ones > 125 registers away
    layout = layout_registers(device)
    names = {r.measurement for r in layout.registers}
    # Module 6's DCW is 118 registers from DCW_SF in the header, module 7's 138.
    assert "mppt_module6_DCW" in names
    assert "mppt_module7_DCW" not in names and "mppt_module7_DCSt" in names  # no sf needed
    assert (
        "mppt_module7_DCW: 138 registers from its scale factor DCW_SF, more than one "
        "request may read (125)" in layout.skipped
    )
    for request in plan_requests(layout.registers):
        assert request.count <= 125
        for register in request.registers:
            if register.scale_factor_address is not None:
                assert request.address <= register.scale_factor_address < request.end


def test_unknown_and_unpolled_models_are_kept_in_the_layout_but_not_read():
    device = chain((1, 66), (64999, 10), (120, 26), (103, 50))
    names = by_name(device)
    assert not any(n.startswith("nameplate") for n in names)
    assert names["inverter_three_phase_W"].address == 40002 + 68 + 12 + 28 + 14
    assert [m.name for m in device.models] == ["common", "model_64999", "nameplate",
                                               "inverter_three_phase"]  # fmt: skip

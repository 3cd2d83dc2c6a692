"""The former home of `hvt store check`, now ``hvt.maintenance.store_check``; kept so that existing imports work."""

from hvt.maintenance.store_check import DEFAULT_GRACE_S as DEFAULT_GRACE_S
from hvt.maintenance.store_check import PROBE_FOLDER as PROBE_FOLDER
from hvt.maintenance.store_check import Finding as Finding
from hvt.maintenance.store_check import StoreReport as StoreReport
from hvt.maintenance.store_check import check_store as check_store

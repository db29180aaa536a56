// A stand-in librocm_smi64.so.1 with one known AMD GPU, for the paths no
// machine without an AMD GPU can reach with AMD's library. It implements the
// entry points inferscope uses, with the real ABI (rocm_smi.h). The energy
// counter grows by exactly 1 J (1e6 units of 1 uJ) per read, so deltas are known.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { SUCCESS = 0, INVALID_ARGS = 1, NOT_SUPPORTED = 2 };

static uint64_t energy_units = 7000000000ull;

int rsmi_init(uint64_t flags) { return SUCCESS; }
int rsmi_shut_down(void) { return SUCCESS; }
int rsmi_status_string(int status, const char **text)
{
	*text = status == SUCCESS ? "RSMI_STATUS_SUCCESS" : "fake ROCm SMI error";
	return SUCCESS;
}
int rsmi_num_monitor_devices(uint32_t *n) { *n = 1; return SUCCESS; }

#define DEVICE(i)                    \
	do {                         \
		if ((i) != 0)        \
			return INVALID_ARGS; \
	} while (0)

int rsmi_dev_name_get(uint32_t i, char *name, size_t len)
{
	DEVICE(i);
	strncpy(name, "AMD Instinct MI300X", len - 1);
	name[len - 1] = 0;
	return SUCCESS;
}
int rsmi_dev_unique_id_get(uint32_t i, uint64_t *id) { DEVICE(i); *id = 0x4f5c2a1b3d6e7f80ull; return SUCCESS; }
int rsmi_dev_pci_id_get(uint32_t i, uint64_t *bdf) { DEVICE(i); *bdf = (0x0000ull << 32) | (0x83 << 8) | (0 << 3) | 0; return SUCCESS; }
int rsmi_dev_busy_percent_get(uint32_t i, uint32_t *busy) { DEVICE(i); *busy = 63; return SUCCESS; }
int rsmi_dev_memory_usage_get(uint32_t i, int type, uint64_t *used) { DEVICE(i); *used = 96ull << 30; return type == 0 ? SUCCESS : NOT_SUPPORTED; }
int rsmi_dev_memory_total_get(uint32_t i, int type, uint64_t *total) { DEVICE(i); *total = 192ull << 30; return type == 0 ? SUCCESS : NOT_SUPPORTED; }
int rsmi_dev_temp_metric_get(uint32_t i, uint32_t sensor, int metric, int64_t *t) { DEVICE(i); *t = 58000; return SUCCESS; }
int rsmi_dev_power_ave_get(uint32_t i, uint32_t sensor, uint64_t *uw) { DEVICE(i); *uw = 550000000; return SUCCESS; }
int rsmi_dev_energy_count_get(uint32_t i, uint64_t *count, float *resolution_uj, uint64_t *timestamp)
{
	DEVICE(i);
	*count = energy_units;
	*resolution_uj = 1.0f;
	*timestamp = 0;
	energy_units += 1000000;
	return SUCCESS;
}

// A stand-in libnvidia-ml.so.1 with scripted values, for the paths no
// GPU-less machine can reach with NVIDIA's library. It implements the entry
// points inferscope uses, with the real ABI (nvml.h), and reads its script from
// the file named by FAKE_NVML_SCRIPT, one item per line:
//
//   device <uuid> <name> <bus-id> <gpu%> <mem%> <mem-used> <mem-total> <temp-C>
//          <power-mW> <limit-mW> <energy-mJ> <sm-MHz> <mem-MHz> <pcie-tx-KB/s>
//          <pcie-rx-KB/s> <throttle-bits> <ecc-corrected> <ecc-uncorrected>
//   failing                       a device whose every query fails (GPU lost)
//   process <device> <pid> <used-bytes> <sm%> <mem%>   (sm% < 0: no samples, NOT_FOUND)
//   xid <device> <xid>            delivered once to an event set's first wait
//   gpm <device> <sm%> <occupancy%> <tensor%> <dram%>   GPM metrics (Hopper+); others have none
//   mig <device> <instances> <used-bytes> <total-bytes>  MIG mode on, with that many instances
//
// Energy grows by exactly 1000 mJ per read, so deltas are known.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	SUCCESS = 0,
	ERROR_INVALID_ARGUMENT = 2,
	ERROR_NOT_SUPPORTED = 3,
	ERROR_NOT_FOUND = 6,
	ERROR_INSUFFICIENT_SIZE = 7,
	ERROR_TIMEOUT = 10,
	ERROR_GPU_IS_LOST = 15,
};

#define MAX_DEVICES 8
#define MAX_PROCESSES 32

struct device {
	int failing;
	char uuid[96], name[96], bus_id[32];
	unsigned gpu_util, mem_util, temp, power_mw, limit_mw, sm_mhz, mem_mhz, tx, rx;
	unsigned long long mem_used, mem_total, energy_mj, throttle, ecc_corrected, ecc_uncorrected;
	int gpm;
	double gpm_sm, gpm_occupancy, gpm_tensor, gpm_dram;
	unsigned mig_count;
	struct device *migs;
};

static struct device mig_devices[MAX_DEVICES * 7];
static unsigned n_mig_devices;

struct process {
	unsigned device, pid;
	unsigned long long used;
	int sm, mem;
};

static struct device devices[MAX_DEVICES];
static unsigned n_devices;
static struct process processes[MAX_PROCESSES];
static unsigned n_processes;
static unsigned xid_device, xid_value;
static int xid_pending;

typedef struct device *nvmlDevice_t;

typedef struct {
	char busIdLegacy[16];
	unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

typedef struct {
	unsigned gpu, memory;
} nvmlUtilization_t;

typedef struct {
	unsigned version;
	unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
	unsigned pid;
	unsigned long long usedGpuMemory;
	unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
	unsigned pid;
	unsigned long long timeStamp;
	unsigned smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
	nvmlDevice_t device;
	unsigned long long eventType, eventData;
	unsigned gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

struct event_set {
	unsigned long long types;
};

static void load_script(void)
{
	const char *path = getenv("FAKE_NVML_SCRIPT");
	FILE *f = path ? fopen(path, "r") : NULL;
	char line[512];
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		struct device *d = &devices[n_devices];
		struct process *p = &processes[n_processes];
		if (n_devices < MAX_DEVICES && !strncmp(line, "device ", 7) &&
		    sscanf(line + 7, "%95s %95s %31s %u %u %llu %llu %u %u %u %llu %u %u %u %u %llx %llu %llu", d->uuid,
			   d->name, d->bus_id, &d->gpu_util, &d->mem_util, &d->mem_used, &d->mem_total, &d->temp,
			   &d->power_mw, &d->limit_mw, &d->energy_mj, &d->sm_mhz, &d->mem_mhz, &d->tx, &d->rx,
			   &d->throttle, &d->ecc_corrected, &d->ecc_uncorrected) == 18)
			n_devices++;
		else if (n_devices < MAX_DEVICES && !strncmp(line, "failing", 7))
			devices[n_devices++].failing = 1;
		else if (n_processes < MAX_PROCESSES && !strncmp(line, "process ", 8) &&
			 sscanf(line + 8, "%u %u %llu %d %d", &p->device, &p->pid, &p->used, &p->sm, &p->mem) == 5)
			n_processes++;
		else if (sscanf(line, "xid %u %u", &xid_device, &xid_value) == 2)
			xid_pending = 1;
		else if (!strncmp(line, "mig ", 4)) {
			unsigned i, count;
			unsigned long long used, total;
			if (sscanf(line + 4, "%u %u %llu %llu", &i, &count, &used, &total) == 4 && i < MAX_DEVICES &&
			    count <= 7 && n_mig_devices + count <= MAX_DEVICES * 7) {
				devices[i].mig_count = count;
				devices[i].migs = &mig_devices[n_mig_devices];
				for (unsigned m = 0; m < count; m++) {
					struct device *g = &mig_devices[n_mig_devices++];
					snprintf(g->uuid, sizeof g->uuid, "MIG-%u%u-4d2c-5b3a-8e9f-0a1b2c3d4e5f", i, m);
					g->mem_used = used;
					g->mem_total = total;
				}
			}
		} else if (!strncmp(line, "gpm ", 4)) {
			unsigned i;
			double sm, occupancy, tensor, dram;
			if (sscanf(line + 4, "%u %lf %lf %lf %lf", &i, &sm, &occupancy, &tensor, &dram) == 5 &&
			    i < MAX_DEVICES) {
				devices[i].gpm = 1;
				devices[i].gpm_sm = sm;
				devices[i].gpm_occupancy = occupancy;
				devices[i].gpm_tensor = tensor;
				devices[i].gpm_dram = dram;
			}
		}
	}
	fclose(f);
}

// Every device query starts here: a failing device fails every query.
#define DEVICE(d)                            \
	do {                                 \
		if (!(d))                    \
			return ERROR_INVALID_ARGUMENT; \
		if ((d)->failing)            \
			return ERROR_GPU_IS_LOST; \
	} while (0)

static int copy_string(char *out, unsigned length, const char *s)
{
	if (strlen(s) + 1 > length)
		return ERROR_INSUFFICIENT_SIZE;
	strcpy(out, s);
	return SUCCESS;
}

int nvmlInit_v2(void) { load_script(); return SUCCESS; }
int nvmlInitWithFlags(unsigned flags) { return nvmlInit_v2(); }
int nvmlShutdown(void) { return SUCCESS; }
const char *nvmlErrorString(int result) { return result == ERROR_GPU_IS_LOST ? "GPU is lost" : "fake NVML error"; }
int nvmlSystemGetDriverVersion(char *version, unsigned length) { return copy_string(version, length, "580.95.05"); }

int nvmlDeviceGetCount_v2(unsigned *count) { *count = n_devices; return SUCCESS; }

int nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *device)
{
	if (index >= n_devices)
		return ERROR_INVALID_ARGUMENT;
	*device = &devices[index];
	return SUCCESS;
}

int nvmlDeviceGetIndex(nvmlDevice_t d, unsigned *index) { DEVICE(d); *index = d - devices; return SUCCESS; }
int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned length) { DEVICE(d); return copy_string(name, length, d->name); }
int nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned length) { DEVICE(d); return copy_string(uuid, length, d->uuid); }

int nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
	DEVICE(d);
	memset(pci, 0, sizeof *pci);
	strncpy(pci->busId, d->bus_id, sizeof pci->busId - 1);
	strncpy(pci->busIdLegacy, d->bus_id, sizeof pci->busIdLegacy - 1);
	pci->pciDeviceId = 0x233010de;
	return SUCCESS;
}

int nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u)
{
	DEVICE(d);
	u->gpu = d->gpu_util;
	u->memory = d->mem_util;
	return SUCCESS;
}

int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
	DEVICE(d);
	m->total = d->mem_total;
	m->reserved = 0;
	m->used = d->mem_used;
	m->free = d->mem_total - d->mem_used;
	return SUCCESS;
}

int nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned *t) { DEVICE(d); *t = d->temp; return SUCCESS; }
int nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned *mw) { DEVICE(d); *mw = d->power_mw; return SUCCESS; }
int nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned *mw) { DEVICE(d); *mw = d->limit_mw; return SUCCESS; }

int nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj)
{
	DEVICE(d);
	*mj = d->energy_mj;
	d->energy_mj += 1000;
	return SUCCESS;
}

int nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned *mhz)
{
	DEVICE(d);
	switch (type) {
	case 1: *mhz = d->sm_mhz; return SUCCESS;  // NVML_CLOCK_SM
	case 2: *mhz = d->mem_mhz; return SUCCESS; // NVML_CLOCK_MEM
	default: return ERROR_NOT_SUPPORTED;
	}
}

int nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned *kbps)
{
	DEVICE(d);
	*kbps = counter == 0 ? d->tx : d->rx; // NVML_PCIE_UTIL_TX_BYTES, RX_BYTES
	return SUCCESS;
}

int nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *reasons)
{
	DEVICE(d);
	*reasons = d->throttle;
	return SUCCESS;
}

int nvmlDeviceGetEccMode(nvmlDevice_t d, int *current, int *pending)
{
	DEVICE(d);
	*current = *pending = 1;
	return SUCCESS;
}

int nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int error_type, int counter_type, unsigned long long *count)
{
	DEVICE(d);
	*count = error_type == 0 ? d->ecc_corrected : d->ecc_uncorrected;
	return SUCCESS;
}

int nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned *current, unsigned *pending)
{
	DEVICE(d);
	*current = *pending = d->mig_count > 0;
	return SUCCESS;
}

int nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned *count)
{
	DEVICE(d);
	*count = d->mig_count ? 7 : 0;
	return SUCCESS;
}

// Slots past the instances made are empty: NOT_FOUND, as NVIDIA's library answers.
int nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned index, nvmlDevice_t *mig)
{
	DEVICE(d);
	if (index >= d->mig_count)
		return ERROR_NOT_FOUND;
	*mig = &d->migs[index];
	return SUCCESS;
}

int nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned *count, nvmlProcessInfo_t *infos)
{
	unsigned n = 0, capacity = *count;
	DEVICE(d);
	for (unsigned i = 0; i < n_processes; i++) {
		if (&devices[processes[i].device] != d)
			continue;
		if (infos && n < capacity) {
			infos[n].pid = processes[i].pid;
			infos[n].usedGpuMemory = processes[i].used;
			infos[n].gpuInstanceId = infos[n].computeInstanceId = 0xffffffff;
		}
		n++;
	}
	*count = n;
	return n > capacity || (!infos && n) ? ERROR_INSUFFICIENT_SIZE : SUCCESS;
}

// Samples newer than `since` (microseconds); none at all is NOT_FOUND, as NVIDIA's library answers.
int nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *samples, unsigned *count,
				    unsigned long long since)
{
	unsigned n = 0, capacity = *count;
	struct timespec now;
	DEVICE(d);
	clock_gettime(CLOCK_REALTIME, &now);
	for (unsigned i = 0; i < n_processes; i++) {
		struct process *p = &processes[i];
		if (&devices[p->device] != d || p->sm < 0)
			continue;
		if (samples && n < capacity) {
			samples[n].pid = p->pid;
			samples[n].timeStamp = now.tv_sec * 1000000ull + now.tv_nsec / 1000;
			samples[n].smUtil = p->sm;
			samples[n].memUtil = p->mem;
			samples[n].encUtil = samples[n].decUtil = 0;
		}
		n++;
	}
	*count = n;
	if (!n)
		return ERROR_NOT_FOUND;
	return n > capacity || !samples ? ERROR_INSUFFICIENT_SIZE : SUCCESS;
}

int nvmlEventSetCreate(struct event_set **set)
{
	*set = calloc(1, sizeof **set);
	return *set ? SUCCESS : ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) { DEVICE(d); *types = 0x8; return SUCCESS; }

int nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, struct event_set *set)
{
	DEVICE(d);
	set->types |= types;
	return SUCCESS;
}

int nvmlEventSetWait_v2(struct event_set *set, nvmlEventData_t *data, unsigned timeout_ms)
{
	if (xid_pending && (set->types & 0x8)) { // nvmlEventTypeXidCriticalError
		xid_pending = 0;
		memset(data, 0, sizeof *data);
		data->device = &devices[xid_device];
		data->eventType = 0x8;
		data->eventData = xid_value;
		return SUCCESS;
	}
	struct timespec t = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
	nanosleep(&t, NULL);
	return ERROR_TIMEOUT;
}

int nvmlEventSetFree(struct event_set *set) { free(set); return SUCCESS; }

// GPM: a sample remembers its device; metrics between two samples are the script's.
typedef struct {
	unsigned version, isSupportedDevice;
} nvmlGpmSupport_t;

struct gpm_sample {
	struct device *device;
};

typedef struct {
	unsigned metricId;
	int nvmlReturn;
	double value;
	struct {
		char *shortName, *longName, *unit;
	} metricInfo;
} nvmlGpmMetric_t;

typedef struct {
	unsigned version, numMetrics;
	struct gpm_sample *sample1, *sample2;
	nvmlGpmMetric_t metrics[210];
} nvmlGpmMetricsGet_t;

int nvmlGpmQueryDeviceSupport(nvmlDevice_t d, nvmlGpmSupport_t *support)
{
	DEVICE(d);
	support->isSupportedDevice = d->gpm;
	return SUCCESS;
}

int nvmlGpmSampleAlloc(struct gpm_sample **sample)
{
	*sample = calloc(1, sizeof **sample);
	return *sample ? SUCCESS : ERROR_INVALID_ARGUMENT;
}

int nvmlGpmSampleFree(struct gpm_sample *sample) { free(sample); return SUCCESS; }

int nvmlGpmSampleGet(nvmlDevice_t d, struct gpm_sample *sample)
{
	DEVICE(d);
	if (!d->gpm)
		return ERROR_NOT_SUPPORTED;
	sample->device = d;
	return SUCCESS;
}

int nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *get)
{
	static char name[] = "fake", unit[] = "%";
	struct device *d = get->sample2 ? get->sample2->device : NULL;
	if (!d || !get->sample1 || get->sample1->device != d || get->numMetrics > 210)
		return ERROR_INVALID_ARGUMENT;
	for (unsigned i = 0; i < get->numMetrics; i++) {
		nvmlGpmMetric_t *m = &get->metrics[i];
		m->nvmlReturn = SUCCESS;
		m->metricInfo.shortName = m->metricInfo.longName = name;
		m->metricInfo.unit = unit;
		switch (m->metricId) {
		case 2: m->value = d->gpm_sm; break;         // NVML_GPM_METRIC_SM_UTIL
		case 3: m->value = d->gpm_occupancy; break;  // NVML_GPM_METRIC_SM_OCCUPANCY
		case 5: m->value = d->gpm_tensor; break;     // NVML_GPM_METRIC_ANY_TENSOR_UTIL
		case 10: m->value = d->gpm_dram; break;      // NVML_GPM_METRIC_DRAM_BW_UTIL
		default: m->nvmlReturn = ERROR_NOT_SUPPORTED;
		}
	}
	return SUCCESS;
}

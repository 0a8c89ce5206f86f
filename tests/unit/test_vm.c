/* Unit tests of the VM layer that need no VM: domain XML and accel choice. */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "vm.h"

#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bl_vm_config base_config(void)
{
	bl_vm_config cfg = {
	    .name = "bl-test",
	    .kernel = "/k/vmlinux",
	    .initrd = "/k/initramfs.cpio",
	    .memory_mib = 256,
	    .vcpus = 2,
	    .accel = BL_ACCEL_TCG,
	    .console_log = "/s/console.log",
	    .agent_socket = "/s/agent.sock",
	    .shares = {{.tag = "rootfs", .dir = "/images/x"}},
	    .n_shares = 1,
	};
	return cfg;
}

/* Evaluates an XPath expression on the XML; returns its string value (malloc'd). */
static char *xpath_string(const char *xml, const char *expr)
{
	xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "dom.xml", NULL, XML_PARSE_NONET);
	if (!doc)
		return NULL;
	xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
	xmlXPathObjectPtr obj = xmlXPathEvalExpression(BAD_CAST expr, ctx);
	char *r = NULL;
	if (obj) {
		xmlChar *s = xmlXPathCastToString(obj);
		r = strdup((const char *)s);
		xmlFree(s);
		xmlXPathFreeObject(obj);
	}
	xmlXPathFreeContext(ctx);
	xmlFreeDoc(doc);
	return r;
}

static void test_xml_recipe(void)
{
	bl_vm_config cfg = base_config();
	_cleanup_free_ char *xml = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_vm_domain_xml(&cfg, &xml, NULL), 0);
	struct {
		const char *expr, *want;
	} checks[] = {
	    {"string(/domain/@type)", "qemu"},
	    {"string(/domain/os/type/@machine)", "microvm"},
	    {"string(/domain/memory)", "256"},
	    {"string(/domain/vcpu)", "2"},
	    {"string(/domain/memoryBacking/source/@type)", "memfd"},
	    {"string(/domain/memoryBacking/access/@mode)", "shared"},
	    {"string(/domain/on_reboot)", "destroy"},
	    {"string(/domain/devices/controller[@type='usb']/@model)", "none"},
	    {"string(/domain/devices/memballoon/@model)", "virtio"},
	    {"string(/domain/devices/memballoon/@freePageReporting)", "on"},
	    {"string(/domain/devices/memballoon/address/@type)", "virtio-mmio"},
	    {"string(/domain/features/tcg/tb-cache)", "32"},
	    {"string(/domain/features/tcg/tb-cache/@unit)", "MiB"},
	    {"string(/domain/cputune/shares)", "8192"},
	    {"string(/domain/cputune/global_period)", "100000"},
	    {"string(/domain/cputune/global_quota)", "200000"}, /* 2 vCPUs */
	    {"string(/domain/devices/channel/target/@name)", "org.boxlite.agent"},
	    {"string(/domain/devices/channel/source/@path)", "/s/agent.sock"},
	    {"string(/domain/devices/filesystem/target/@dir)", "rootfs"},
	    {"string(/domain/devices/filesystem/address/@type)", "virtio-mmio"},
	    {"count(/domain/devices/interface)", "0"}, /* no network unless asked */
	    {"count(/domain/devices/disk)", "0"},
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(checks); i++) {
		_cleanup_free_ char *got = xpath_string(xml, checks[i].expr);
		CU_ASSERT_PTR_NOT_NULL_FATAL(got);
		if (strcmp(got, checks[i].want))
			printf("\n  %s = '%s', want '%s'\n", checks[i].expr, got, checks[i].want);
		CU_ASSERT_STRING_EQUAL(got, checks[i].want);
	}
	CU_ASSERT(strstr(xml, "virtio-mmio.force-legacy=false") != NULL);
	CU_ASSERT(strstr(xml, "console=ttyS0") != NULL);
}

/* Hostile characters in names and paths come out escaped, not as markup. */
static void test_xml_escaping(void)
{
	bl_vm_config cfg = base_config();
	cfg.name = "a<b>&'\"c";
	cfg.shares[0].dir = "/tmp/x'><devices><interface type='user'/></devices>";
	cfg.cmdline_extra = "quiet </cmdline><evil/>";
	_cleanup_free_ char *xml = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_vm_domain_xml(&cfg, &xml, NULL), 0);
	_cleanup_free_ char *name = xpath_string(xml, "string(/domain/name)");
	CU_ASSERT_STRING_EQUAL(name, cfg.name);
	_cleanup_free_ char *dir =
	    xpath_string(xml, "string(/domain/devices/filesystem/source/@dir)");
	CU_ASSERT_STRING_EQUAL(dir, cfg.shares[0].dir);
	_cleanup_free_ char *ifaces = xpath_string(xml, "count(//interface)");
	CU_ASSERT_STRING_EQUAL(ifaces, "0");
	_cleanup_free_ char *evil = xpath_string(xml, "count(//evil)");
	CU_ASSERT_STRING_EQUAL(evil, "0");
}

static void test_xml_kvm_and_disk(void)
{
	bl_vm_config cfg = base_config();
	cfg.accel = BL_ACCEL_KVM;
	cfg.disk_image = "/s/disk.img";
	cfg.shares[0].mutable_source = true;
	_cleanup_free_ char *xml = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_vm_domain_xml(&cfg, &xml, NULL), 0);
	_cleanup_free_ char *type = xpath_string(xml, "string(/domain/@type)");
	CU_ASSERT_STRING_EQUAL(type, "kvm");
	_cleanup_free_ char *tcg = xpath_string(xml, "count(/domain/features/tcg)");
	CU_ASSERT_STRING_EQUAL(tcg, "0"); /* no translation cache under KVM */
	_cleanup_free_ char *disk = xpath_string(xml, "string(/domain/devices/disk/source/@file)");
	CU_ASSERT_STRING_EQUAL(disk, "/s/disk.img");
	_cleanup_free_ char *cache =
	    xpath_string(xml, "string(/domain/devices/filesystem/binary/cache/@mode)");
	CU_ASSERT_STRING_EQUAL(cache, "auto");
}

static void test_xml_rejects_bad_config(void)
{
	bl_error_t err = BL_ERROR_INIT;
	char *xml = NULL;
	bl_vm_config cfg = base_config();
	cfg.memory_mib = 1;
	CU_ASSERT(bl_vm_domain_xml(&cfg, &xml, &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	CU_ASSERT(strstr(err.msg, "memory") != NULL);
	cfg = base_config();
	cfg.vcpus = 0;
	CU_ASSERT(bl_vm_domain_xml(&cfg, &xml, &err) < 0);
	cfg = base_config();
	cfg.shares[0].dir = "relative/dir";
	CU_ASSERT(bl_vm_domain_xml(&cfg, &xml, &err) < 0);
	cfg = base_config();
	cfg.agent_socket = "agent.sock";
	CU_ASSERT(bl_vm_domain_xml(&cfg, &xml, &err) < 0);
	cfg = base_config();
	cfg.name = "";
	CU_ASSERT(bl_vm_domain_xml(&cfg, &xml, &err) < 0);
	CU_ASSERT_PTR_NULL(xml);
}

static void test_accel_override(void)
{
	bl_accel a;
	char why[256];
	unsetenv("BOXLITE_ACCEL");
	CU_ASSERT_EQUAL(bl_accel_choose("kvm", &a, why, sizeof(why), NULL), 0);
	CU_ASSERT_EQUAL(a, BL_ACCEL_KVM);
	CU_ASSERT(strstr(why, "requested") != NULL);
	CU_ASSERT_EQUAL(bl_accel_choose("tcg", &a, why, sizeof(why), NULL), 0);
	CU_ASSERT_EQUAL(a, BL_ACCEL_TCG);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(bl_accel_choose("hvf", &a, why, sizeof(why), &err) < 0);
	CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	setenv("BOXLITE_ACCEL", "tcg", 1);
	CU_ASSERT_EQUAL(bl_accel_choose(NULL, &a, why, sizeof(why), NULL), 0);
	CU_ASSERT_EQUAL(a, BL_ACCEL_TCG);
	unsetenv("BOXLITE_ACCEL");
}

/* Auto mode: KVM exactly when /dev/kvm opens and the CPU shows vmx/svm. */
static void test_accel_auto(void)
{
	bl_accel a;
	char why[256];
	CU_ASSERT_EQUAL_FATAL(bl_accel_choose(NULL, &a, why, sizeof(why), NULL), 0);
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[8192];
	bool virt = false;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5)) {
			virt = strstr(line, " vmx") || strstr(line, " svm");
			break;
		}
	if (f)
		fclose(f);
	bool kvm_opens = access("/dev/kvm", R_OK | W_OK) == 0;
	CU_ASSERT_EQUAL(a, (virt && kvm_opens) ? BL_ACCEL_KVM : BL_ACCEL_TCG);
	printf("\n  auto: %s\n", why);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"xml_recipe", test_xml_recipe},
	    {"xml_escaping", test_xml_escaping},
	    {"xml_kvm_and_disk", test_xml_kvm_and_disk},
	    {"xml_rejects_bad_config", test_xml_rejects_bad_config},
	    {"accel_override", test_accel_override},
	    {"accel_auto", test_accel_auto},
	    {NULL, NULL},
	};
	return bl_test_run("vm", cases);
}

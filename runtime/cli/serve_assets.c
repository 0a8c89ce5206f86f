/* The playground page and the OpenAPI document, built into the binary. */
#include "serve.h"

/* Paths are relative to the top of the tree (make runs there). */
__asm__(".section .rodata\n"
	".global srv_playground_html\n"
	"srv_playground_html:\n"
	".incbin \"runtime/cli/playground.html\"\n"
	".global srv_playground_end\n"
	"srv_playground_end:\n"
	".byte 0\n"
	".global srv_openapi_yaml\n"
	"srv_openapi_yaml:\n"
	".incbin \"runtime/cli/openapi.yaml\"\n"
	".global srv_openapi_end\n"
	"srv_openapi_end:\n"
	".byte 0\n"
	".previous\n");

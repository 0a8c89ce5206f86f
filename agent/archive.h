/* The agent's archiver for file copies (see archive.c). */
#pragma once

#include "bl_agent_proto.h"

/* main() of the agent re-exec'd as BL_AGENT_COPY_OUT_PATH or
 * BL_AGENT_COPY_IN_PATH; returns the exit status. */
int agent_archive_main(int argc, char **argv);

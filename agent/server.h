/* The ttrpc service boxlite.agent.v1.Agent: request decoding, checks, replies. */
#pragma once

#include "bl_agent_proto.h"
#include "bl_error.h"
#include "ttrpc.h"

#define AGENT_SERVICE BL_AGENT_SERVICE
#define AGENT_VERSION "0.1.0"

/* Registers every method of agent.proto on srv. */
int agent_server_register(ttrpc_server *srv, bl_error_t *err);

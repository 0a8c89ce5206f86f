#include "bl_agent_proto.h"

const char *const bl_agent_methods[BL_AGENT_N_METHODS + 1] = {
    [BL_AGENT_PING] = "Ping",
    [BL_AGENT_INIT] = "Init",
    [BL_AGENT_CREATE_CONTAINER] = "CreateContainer",
    [BL_AGENT_START_PROCESS] = "StartProcess",
    [BL_AGENT_WAIT_PROCESS] = "WaitProcess",
    [BL_AGENT_SIGNAL_PROCESS] = "SignalProcess",
    [BL_AGENT_WRITE_STDIN] = "WriteStdin",
    [BL_AGENT_CLOSE_STDIN] = "CloseStdin",
    [BL_AGENT_READ_STDOUT] = "ReadStdout",
    [BL_AGENT_READ_STDERR] = "ReadStderr",
    [BL_AGENT_RESIZE_PTY] = "ResizePty",
    [BL_AGENT_STATS] = "Stats",
    [BL_AGENT_LIST_PIDS] = "ListPids",
    [BL_AGENT_DELETE_CONTAINER] = "DeleteContainer",
    [BL_AGENT_SHUTDOWN] = "Shutdown",
    [BL_AGENT_PAUSE_CONTAINER] = "PauseContainer",
    [BL_AGENT_RESUME_CONTAINER] = "ResumeContainer",
    [BL_AGENT_UPDATE_CONTAINER] = "UpdateContainer",
    [BL_AGENT_N_METHODS] = NULL,
};

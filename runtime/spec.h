/*
 * The OCI runtime spec (config.json) and Process objects libboxlite hands the
 * guest agent, built with json-c from the sandbox options and the image's
 * configuration (Env, Entrypoint, Cmd, WorkingDir, User).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "bl_error.h"

/* What an image's config.json says about how to run it. */
typedef struct bl_image_defaults {
	char **env;	   /* NULL-terminated, never NULL after parsing */
	char **entrypoint; /* may be NULL */
	char **cmd;	   /* may be NULL */
	char *cwd;	   /* may be NULL */
	char *user;	   /* may be NULL */
} bl_image_defaults;

/* Parses an OCI image config (either the whole config with a "config" member,
 * or that member alone); json NULL or "" gives empty defaults. Image configs
 * are untrusted: bounded counts, strings only. */
int bl_image_defaults_parse(const char *json, bl_image_defaults *ret, bl_error_t *err);
void bl_image_defaults_clear(bl_image_defaults *d);

/* One process: fields NULL mean "inherit" from the layer below. */
typedef struct bl_spec_process {
	const char *const *args;
	const char *const *env; /* "K=V", override earlier layers by key */
	const char *cwd;
	const char *user;
	bool terminal;
} bl_spec_process;

/* Builds an OCI Process object as JSON (malloc'd): args from the first layer
 * having them (else the image's entrypoint+cmd), env merged over the image's
 * env, layer by layer, cwd/user from the first layer setting them. Layers
 * are ordered from most to least specific. */
int bl_spec_process_json(const bl_spec_process *const *layers, size_t n_layers,
			 const bl_image_defaults *img, char **ret_json, bl_error_t *err);

typedef struct bl_spec_config {
	const char *hostname;
	uint64_t memory_limit_bytes; /* 0: none */
	int64_t pids_limit;	     /* 0: none */
	bool network;		     /* false: own, empty network namespace */
} bl_spec_config;

/* Builds a whole config.json (malloc'd); process_json NULL leaves "process" out. */
int bl_spec_build(const bl_spec_config *cfg, const char *process_json, char **ret_json,
		  bl_error_t *err);

/* Validates "K=V" (non-empty K without '='). */
bool bl_spec_valid_env(const char *kv);

/* ------------------------------------------------------------ OCI bundles */

#define BL_OCI_SPEC_MAX	       (256u * 1024) /* what the agent accepts */
#define BL_OCI_MAX_MOUNTS      64
#define BL_OCI_MAX_ANNOTATIONS 1024

/* A bind mount of a host path the host must share into the VM. */
typedef struct bl_oci_bind {
	char *source;	  /* absolute host path (from the untrusted spec) */
	char *share_name; /* "m<k>": its name in the container's share directory */
	bool readonly;
} bl_oci_bind;

typedef struct bl_oci_policy {
	bool ignore_lsm;	   /* accept (and ignore) AppArmor / SELinux settings */
	bool ignore_hooks;	   /* accept (and ignore) hooks */
	uint64_t memory_max_bytes; /* largest memory limit the VM can honour; 0: any */
} bl_oci_policy;

/* A bundle's config.json translated for the VM. */
typedef struct bl_oci {
	char *agent_spec; /* config.json for the agent's CreateContainer */
	bl_oci_bind *binds;
	size_t n_binds;
	char **annotations; /* key, value, key, value, ..., NULL */
	bool root_readonly;
	bool terminal;
	int64_t cpu_shares; /* 0: none (applied with UpdateContainer after create) */
	/* What exec inherits: the spec process's env, cwd and "uid:gid", and
	 * the whole process object (capabilities, rlimits, ...). */
	bl_image_defaults proc;
	char *process_json;
	bool has_process;
} bl_oci;

/* Validates an untrusted OCI runtime spec and translates it: root.path is
 * ignored, bind mounts of host paths become share-relative binds at
 * `share_prefix`/m<k>, the guest's own proc/sys/dev mounts are dropped, and
 * what the VM cannot honour is BL_EUNSUPPORTED (naming the field). */
int bl_oci_translate(const char *spec_json, const char *share_prefix, const bl_oci_policy *pol,
		     bl_oci *ret, bl_error_t *err);
void bl_oci_clear(bl_oci *o);

/* An exec's process: the container's spec process (base_json) with args,
 * env and terminal from over_json, and its user / cwd when asked. */
int bl_oci_process_overlay(const char *base_json, const char *over_json, bool user, bool cwd,
			   char **ret, bl_error_t *err);

/* An OCI LinuxResources object as new limits (fields absent: -1). */
typedef struct bl_oci_resources {
	int64_t memory_limit, cpu_quota, cpu_period, cpu_shares, pids_limit;
} bl_oci_resources;
int bl_oci_resources_parse(const char *json, bl_oci_resources *ret, bl_error_t *err);

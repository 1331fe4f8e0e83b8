/*
 * mhd.c - dlopen()s libmicrohttpd on demand; see mhd.h.
 */
#include "daemon/mhd.h"

#include <dlfcn.h>
#include <errno.h>

#include "daemon/log.h"

struct mhd_api mhd;

static int sym(void *lib, void **slot, const char *name)
{
	*slot = dlsym(lib, name);
	if (*slot)
		return 0;
	log_msg(LOG_ERR, "metrics: %s has no %s", MHD_SONAME, name);
	return -ENOENT;
}

int mhd_load(void)
{
	if (mhd.start_daemon)
		return 0;
	void *lib = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		log_msg(LOG_ERR, "metrics: cannot load %s: %s", MHD_SONAME, dlerror());
		return -ENOENT;
	}
	struct mhd_api a;
	if (sym(lib, (void **)&a.start_daemon, "MHD_start_daemon") ||
	    sym(lib, (void **)&a.stop_daemon, "MHD_stop_daemon") ||
	    sym(lib, (void **)&a.create_response_from_buffer,
		"MHD_create_response_from_buffer") ||
	    sym(lib, (void **)&a.add_response_header, "MHD_add_response_header") ||
	    sym(lib, (void **)&a.queue_response, "MHD_queue_response") ||
	    sym(lib, (void **)&a.destroy_response, "MHD_destroy_response")) {
		dlclose(lib);
		return -ENOENT;
	}
	mhd = a;
	return 0;
}

/* remora-shim's second role: the exec reaper (remora/exec_reaper.h). */
#ifndef REMORA_SHIM_EXEC_REAPER_H
#define REMORA_SHIM_EXEC_REAPER_H

/* argv[1] is RM_EXEC_REAPER_FLAG; runs argv[2..] (after an optional "--") and returns
 * the exit status for the reaper's process. */
int rm_exec_reaper_main(int argc, char **argv);

#endif

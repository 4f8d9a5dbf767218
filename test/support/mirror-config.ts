// The body of a POST /api/v1/repository/…/mirror that the security tests create their mirrors
// with: an upstream that is never reached (the schedule starts far in the future), all tags.

/** A mirror configuration for `robot`, from `external_reference` (an upstream repository) on. */
export function mirrorConfig(robot: string, externalReference: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    external_reference: externalReference,
    sync_interval: 3600,
    sync_start_date: '2030-01-02T03:04:05Z',
    root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['*'] },
    robot_username: robot,
    ...overrides,
  };
}
